"""Tamper-evident audit trail (全程操作日志审计): a hash chain of every data access and
administrative change, signed checkpoints, and verification."""
