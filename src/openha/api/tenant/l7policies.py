"""/v2/lbaas/l7policies (being written)."""

from fastapi import APIRouter

router = APIRouter()
