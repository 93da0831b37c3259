"""Federated learning on Flower: malicious clients, robust aggregation, gradient inversion."""
