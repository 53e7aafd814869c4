# The tests that need a live mount run only when OAUTHFS_MOUNT names one
# ('oauthfs dev' started by r/run-tests.sh); the others always run.
library(testthat)
library(oauthfs)

test_check("oauthfs")
