"""Sources of ticks: the synthetic market (default), and later Binance live and Binance files."""
