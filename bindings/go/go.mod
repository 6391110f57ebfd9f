module olm.dev/olm

go 1.19
