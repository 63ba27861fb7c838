"""/v2/lbaas/availabilityzones (being written)."""

from fastapi import APIRouter

router = APIRouter()
