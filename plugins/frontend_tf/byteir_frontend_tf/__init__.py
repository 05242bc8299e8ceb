"""byteir's TensorFlow frontend: ``tf.function``, Keras 3 models (TensorFlow backend) and SavedModel directories
to StableHLO, through TensorFlow's own XLA bridge (a versioned portable artifact) and its SavedModel converter."""

__version__ = "0.1.0"
