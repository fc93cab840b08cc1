"""Generated from proto/lace/v1 by scripts/generate.sh; do not edit."""
