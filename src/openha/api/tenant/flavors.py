"""/v2/lbaas/flavors (being written)."""

from fastapi import APIRouter

router = APIRouter()
