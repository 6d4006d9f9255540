"""The server under test for bench/audit.py: ``python -m bench.audit_server AUDIT PORT``
serves the app from the environment's settings with read auditing on (1) or off (0)."""

from __future__ import annotations

import sys
from dataclasses import replace

import uvicorn

from datatong.app import create_app
from datatong.settings import get_settings


def main() -> None:
    audited, port = sys.argv[1] == "1", int(sys.argv[2])
    settings = replace(get_settings(), audit_reads=audited, login_rate_per_minute=1000)
    uvicorn.run(create_app(settings, migrate=False), host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
