"""The build pipeline: data, model, training, int8 conversion, verification, report and the device bundle."""
