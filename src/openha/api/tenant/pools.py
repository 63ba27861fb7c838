"""/v2/lbaas/pools (being written)."""

from fastapi import APIRouter

router = APIRouter()
