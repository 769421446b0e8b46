"""Image Factory on Twisted: builds OS disk images from TDL templates and pushes them to clouds."""

__version__ = "0.1.0"
API_NAME = "imagefactory"
API_VERSION = "1.0"
