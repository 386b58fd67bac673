"""Head families (module + criterion + decoding), registered in `HEAD_FAMILIES` by `head.type`."""
