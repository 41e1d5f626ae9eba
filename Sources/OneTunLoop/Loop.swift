import OneTunCore
