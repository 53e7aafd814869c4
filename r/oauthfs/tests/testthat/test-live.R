# Tests against a live 'oauthfs dev' mount at OAUTHFS_MOUNT: Demo is
# signed in, Other is not. Tokens may be refreshed while the tests run.

read_file <- function(path) readChar(path, file.size(path), useBytes = TRUE)

test_that("getOAuthIntegrations lists Demo and Other", {
  mount <- live_mount()
  all <- getOAuthIntegrations()
  expect_equal(vapply(all, function(i) i$name, ""), c("Demo", "Other"))
  expect_equal(vapply(all, function(i) i$authenticated, TRUE), c(TRUE, FALSE))
  expect_equal(vapply(all, function(i) i$status, ""), c("signed_in", "not_signed_in"))
  for (i in all) {
    expect_match(i$guid, "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    expect_type(i$scopes, "character")
    expect_equal(Sys.readlink(file.path(mount, "by-name", i$name)), file.path("..", i$guid))
  }
  expect_equal(getOAuthIntegrations(mount = mount), all)
})

test_that("getOAuthIntegration gets one by guid, and NULL for an unknown one", {
  mount <- live_mount()
  demo <- findOAuthIntegration(name = "^Demo$")
  expect_equal(getOAuthIntegration(demo$guid)$name, "Demo")
  expect_equal(getOAuthIntegration(toupper(demo$guid))$guid, demo$guid)
  meta <- jsonlite::fromJSON(file.path(mount, demo$guid, "meta.json"), simplifyVector = FALSE)
  expect_equal(getOAuthIntegration(demo$guid)$client_id, meta$client_id)
  expect_null(getOAuthIntegration("11111111-2222-4333-8444-555555555555"))
  expect_null(getOAuthIntegration("nope"))
})

test_that("findOAuthIntegration matches a regex name and authenticated", {
  live_mount()
  expect_equal(findOAuthIntegration(name = "^Demo$")$name, "Demo")
  expect_equal(findOAuthIntegration(name = "^Oth")$name, "Other")
  expect_equal(findOAuthIntegration(name = "e")$name, "Demo") # the first, by name
  expect_equal(findOAuthIntegration(authenticated = TRUE)$name, "Demo")
  expect_equal(findOAuthIntegration(authenticated = FALSE)$name, "Other")
  expect_equal(findOAuthIntegration(name = "^(Demo|Other)$", authenticated = FALSE)$name, "Other")
  expect_equal(findOAuthIntegration(display_name = "^Other$")$name, "Other")
  expect_null(findOAuthIntegration(name = "^Demo$", authenticated = FALSE))
  expect_null(findOAuthIntegration(name = "^nothing$"))
  other <- findOAuthIntegration(name = "^Other$")
  expect_equal(findOAuthIntegration(guid = other$guid)$name, "Other")
  expect_error(suppressWarnings(findOAuthIntegration(name = "(")))
})

test_that("getOAuthCredentials gives Demo's token, its expiry and Bearer", {
  mount <- live_mount()
  demo <- findOAuthIntegration(name = "^Demo$")
  file <- file.path(mount, demo$guid, "access_token")
  before <- read_file(file)
  creds <- getOAuthCredentials(demo$guid)
  after <- read_file(file)
  expect_true(creds$access_token %in% c(before, after)) # a refresh may come between
  expect_gt(nchar(creds$access_token), 0)
  expect_equal(creds$token_type, "Bearer")
  expect_s3_class(creds$expiry, "POSIXct")
  expect_false(is.na(creds$expiry))
  expect_gt(as.numeric(creds$expiry), as.numeric(Sys.time()))
  expect_lt(as.numeric(creds$expiry), as.numeric(Sys.time()) + 86400)
  expect_equal(creds$audience, demo$guid)
  # The same through the by-name link's guid, in upper case, and the mount argument.
  creds2 <- getOAuthCredentials(toupper(demo$guid), mount = mount)
  expect_equal(creds2$token_type, "Bearer")
  expect_equal(names(creds2), c("access_token", "token_type", "expiry", "audience"))
})

test_that("Other is an oauthfs_not_signed_in error naming the path", {
  mount <- live_mount()
  other <- findOAuthIntegration(name = "^Other$")
  e <- expect_error(getOAuthCredentials(other$guid), class = "oauthfs_not_signed_in")
  expect_s3_class(e, "oauthfs_error")
  expect_false(inherits(e, "oauthfs_expired"))
  expect_match(conditionMessage(e), file.path(mount, other$guid), fixed = TRUE)
  expect_match(conditionMessage(e), "oauthfs login 'Other'", fixed = TRUE)
  expect_equal(e$name, "Other")
  expect_equal(e$guid, other$guid)
  expect_equal(e$path, file.path(mount, other$guid, "token.json"))
  expect_equal(e$reason, "Required key not available")
})

test_that("an unknown guid is an oauthfs_not_found error naming the mount", {
  mount <- live_mount()
  for (guid in c("11111111-2222-4333-8444-555555555555", "nope", "../Demo")) {
    e <- expect_error(getOAuthCredentials(guid), class = "oauthfs_not_found")
    expect_s3_class(e, "oauthfs_error")
    expect_match(conditionMessage(e), mount, fixed = TRUE)
    expect_match(conditionMessage(e), guid, fixed = TRUE)
  }
})

test_that("getDelegatedAzureToken gives a variant's token, and the broker's", {
  mount <- live_mount()
  demo <- findOAuthIntegration(name = "^Demo$")
  tok <- getDelegatedAzureToken("https://storage.dev.test")
  expect_equal(names(tok), c("access_token", "token_type", "expires_in", "expiry", "resource", "audience"))
  expect_equal(tok$audience, demo$guid)
  expect_equal(tok$token_type, "Bearer")
  expect_equal(tok$access_token, read_file(file.path(mount, demo$guid, "tokens", "storage", "access_token")))
  expect_false(identical(tok$access_token, read_file(file.path(mount, demo$guid, "access_token"))))
  expect_true(tok$expires_in > 0 && tok$expires_in <= 60)
  # A resource the integration lists but no variant names: the broker.
  vault <- getDelegatedAzureToken("https://vault.dev.test", integration = "Demo")
  expect_match(vault$access_token, "^dev-at-")
  expect_equal(vault$resource, "https://vault.dev.test")
  expect_error(getDelegatedAzureToken("https://nowhere.test"), class = "oauthfs_not_found")
  e <- expect_error(getDelegatedAzureToken("https://storage.dev.test", integration = "Other"), class = "oauthfs_not_found")
  expect_s3_class(e, "oauthfs_error")
})
