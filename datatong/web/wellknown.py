"""Public, unauthenticated documents: the platform's signing keys (JWKS)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from datatong.keys import jwks

router = APIRouter(tags=["keys"])


@router.get("/.well-known/datatong-keys", summary="平台签名公钥（JWKS）")
def datatong_keys(request: Request) -> dict:  # type: ignore[type-arg]
    """审计检查点与（日后的）交换电子凭证由这些 Ed25519 公钥校验。"""
    return jwks(request.app.state.settings.keys_path)
