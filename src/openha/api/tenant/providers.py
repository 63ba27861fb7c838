"""/v2/lbaas/providers (being written)."""

from fastapi import APIRouter

router = APIRouter()
