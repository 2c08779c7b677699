module floodlight/bench/viewers

go 1.22
