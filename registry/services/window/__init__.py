"""What may leave: releases and their columnar copies, the catalogue, count tables, disclosure control and exports."""
