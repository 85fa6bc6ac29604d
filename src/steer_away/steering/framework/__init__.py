"""The method framework: the interface every method implements, its arguments, what methods are built from."""
