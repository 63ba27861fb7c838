"""/v2/lbaas/quotas (being written)."""

from fastapi import APIRouter

router = APIRouter()
