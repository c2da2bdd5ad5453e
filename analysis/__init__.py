"""Analysis: load stores into pandas, extract optima, fit scaling laws, draw figures."""
