"""LACE gRPC transport: servicers, interceptors, status mapping and start-up. No engine logic here."""
