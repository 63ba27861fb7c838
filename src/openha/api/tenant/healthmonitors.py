"""/v2/lbaas/healthmonitors (being written)."""

from fastapi import APIRouter

router = APIRouter()
