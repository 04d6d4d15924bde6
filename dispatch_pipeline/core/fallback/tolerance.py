"""The tolerance the rules compare energies (kWh), powers (kW) and prices with: below it, a
difference is rounding."""

EPS = 1e-9
