"""Test helpers: reference implementations (oracles) the production code is checked against."""
