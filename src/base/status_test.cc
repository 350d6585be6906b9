#include "escdr/base/status.h"

#include <cerrno>

#include <gtest/gtest.h>

namespace escdr {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return Err(Status::InvalidArgument("odd number " + std::to_string(x)));
  return x / 2;
}

Result<int> Quarter(int x) {
  ESCDR_ASSIGN_OR_RETURN(int h, Half(x));
  ESCDR_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Status EvenStatus(int x) {
  return x % 2 == 0 ? Status::OK() : Status::InvalidArgument("odd number " + std::to_string(x));
}

Status CheckEven(int x) {
  ESCDR_RETURN_IF_ERROR(EvenStatus(x));
  return Status::OK();
}

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.ToString(), "OK");
}

TEST(StatusTest, FactoriesSetCodeAndMessage) {
  Status s = Status::NotFound("no VM named web1");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.IsNotFound());
  EXPECT_EQ(s.message(), "no VM named web1");
  EXPECT_EQ(StatusCodeName(s.code()), "not found");
}

TEST(StatusTest, WithContextPrefixesMessageAndKeepsCode) {
  Status s = Status::Corruption("checksum mismatch").WithContext("catalog a.cat");
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_EQ(s.message(), "catalog a.cat: checksum mismatch");
  EXPECT_TRUE(Status::OK().WithContext("x").ok());
}

TEST(StatusTest, FromErrnoNamesTheOperationAndCause) {
  Status s = Status::FromErrno("cannot open /nonexistent", ENOENT);
  EXPECT_EQ(s.code(), StatusCode::kIOError);
  EXPECT_EQ(s.message(), "cannot open /nonexistent: No such file or directory");
  EXPECT_EQ(Status::FromErrno("write", ENOSPC).code(), StatusCode::kResourceExhausted);
}

TEST(StatusTest, AssignOrReturnPropagatesFirstError) {
  EXPECT_EQ(Quarter(8).value(), 2);
  Result<int> r = Quarter(6);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message(), "odd number 3");
}

TEST(StatusTest, ReturnIfErrorWorksInStatusFunctions) {
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_EQ(CheckEven(5).message(), "odd number 5");
}

}  // namespace
}  // namespace escdr
