"""byteir-backend-asic-stub: the template a hardware vendor copies (see docs/writing-a-backend.md)."""
