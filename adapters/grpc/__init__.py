"""The gateway's own gRPC API (``proto/smg/gateway/v1``), served with grpclib on ``--grpc-port``."""
