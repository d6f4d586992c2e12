"""Front ends: notebook views, the embedded server, test doubles, the scaled benchmark."""
