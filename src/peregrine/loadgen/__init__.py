"""Load generators of ``peregrine bench``: clients of Peregrine's (or any
compatible server's) wire protocols, measuring what a client sees."""
