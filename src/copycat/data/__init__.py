"""Images in: bounded decoding (:mod:`.imageio`), labelled sets (:mod:`.datasets`), the suite's
sets (:mod:`.suite`) and the dataset registry (:mod:`.registry`)."""
