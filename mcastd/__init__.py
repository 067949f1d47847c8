"""mcastd: answer what is heard on IP multicast groups."""

__version__ = "0.1.0"
