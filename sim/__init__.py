"""cocotb verification of the generated RTL: `runner` (build and run), `tb` (testbench), `test_accelerator`."""
