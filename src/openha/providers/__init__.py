"""Provider drivers: turn a load balancer's desired tree into running data planes."""
