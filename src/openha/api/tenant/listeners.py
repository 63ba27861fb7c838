"""/v2/lbaas/listeners (being written)."""

from fastapi import APIRouter

router = APIRouter()
