"""The browser snippet's source, shipped inside the wheel as the package `gateway.static`."""
