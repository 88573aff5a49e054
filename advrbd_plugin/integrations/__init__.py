"""Entry points that mirror the toolboxes' own command lines.

* :mod:`advrbd_plugin.integrations.backdoorbench`: ``python -m
  advrbd_plugin.integrations.backdoorbench --result_file <record> --yaml_path <yaml>
  --dataset <name> [--defense NAME]``, run from a BackdoorBench checkout.

Other toolboxes are reached through :func:`advrbd_plugin.interop.run_record` and
``advrbd run-record --format <name>``.
"""
