"""/v2/lbaas/members (being written)."""

from fastapi import APIRouter

router = APIRouter()
