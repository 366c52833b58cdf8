"""Chat front ends: each turns platform events into service calls and renders the results."""
