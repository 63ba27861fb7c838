"""The controller: reconciles every load balancer's data plane to its desired state."""
