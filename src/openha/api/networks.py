"""/v2.0/networks, /v2.0/subnets, /v2.0/ports (being written)."""

from fastapi import APIRouter

router = APIRouter()
