"""Build recipes for derived model files: run by ``fr-pbd models build``, never at run time.

``dlib_resnet`` converts dlib's CC0 face descriptor to ONNX, ``yunet_variants`` rewrites
YuNet's declared input sizes, ``dlib_resnet_int8`` quantises the embedder. Each result is
checked against the sha256 the manifest pins before it is kept. They need the ``[build]``
extra (onnx, face_recognition_models); nothing outside this package and the ``models
build`` command imports them (tests/test_architecture.py).
"""
