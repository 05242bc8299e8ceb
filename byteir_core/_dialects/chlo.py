"""No op classes: ops of this dialect are generic OpViews (see byteir_core._dialects)."""
