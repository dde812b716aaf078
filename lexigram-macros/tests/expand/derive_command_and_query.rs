impl ::lexigram::Command for OpenAccount {
    type Output = AccountId;
}
::lexigram::__private::inventory::submit! {
    ::lexigram::__private::MessageRegistration::command:: < OpenAccount >
    (::core::file!(), ::core::line!())
}
impl ::lexigram::Query for GetBalance {
    type Output = Option<u64>;
}
::lexigram::__private::inventory::submit! {
    ::lexigram::__private::MessageRegistration::query:: < GetBalance > (::core::file!(),
    ::core::line!())
}
