"""The paper's baseline methods, one module each: their extra parameters and loss terms."""
