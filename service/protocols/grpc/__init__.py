"""The Open Inference Protocol over gRPC (``GRPCInferenceService``), beside HTTP."""
