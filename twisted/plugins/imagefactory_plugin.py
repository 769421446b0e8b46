"""twistd plug-in for ``twistd imagefactory``: a lazy ServiceMaker, nothing else."""

from twisted.application.service import ServiceMaker

imagefactory = ServiceMaker(
    "imagefactory",
    "imgfac_twisted.tap",
    "Image Factory: builds OS images from TDL templates and pushes them to clouds",
    "imagefactory",
)
