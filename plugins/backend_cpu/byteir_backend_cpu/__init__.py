"""byteir-backend-cpu: ahead-of-time native code for the host CPU."""
