"""TFLite conversions: float32 and full-integer int8."""
