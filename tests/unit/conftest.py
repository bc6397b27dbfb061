"""The unit tier: pure parts only, no broker, no database."""
