"""Saliency maps: the CAM engine and explain(), which puts maps on the CT grid."""
