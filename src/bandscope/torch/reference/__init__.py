"""The key-search paper's reference experiment (appendix A): its autoencoders (:mod:`.models`),
data without downloads (:mod:`.data`) and training loop (:mod:`.train`), and the small GPT-style
language model of the spectral-reach scaling runs (:mod:`.lm`).
"""
