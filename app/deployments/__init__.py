"""Deployments: stable model names moved through an evaluation gate."""
