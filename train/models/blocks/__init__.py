"""Building blocks shared by several paper models.

Each concept lives once here: fixed DCT bases (``dct``), fixed and constrained filters
(Sobel, SRM, BayarConv in ``filters``), attention and transformer layers (``attention``),
positional and timestep encodings (``posenc``), backbone access (``backbones``),
convolution units and the DnCNN residual extractor (``convs``) and the export-contract
heads (``heads``).
"""
